"""The live web dashboard of a sweep: ``explaunch dashboard`` or ``hydra.sweeper.dashboard=true``.

``state`` reads a sweep folder into plain data, ``app`` serves it (FastAPI), ``server`` runs it (uvicorn), and
``static/`` holds the page: plain HTML, CSS and JavaScript that draws its charts as inline SVG.
"""
