"""Reading finished sweeps: report rows, rules, reproduction, comparison, the dashboard."""
