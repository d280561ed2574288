from explaunch.cli import entry

entry()
