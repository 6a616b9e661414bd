#!/usr/bin/env python3
# Serve the WSGI application in app.py through CGI, with the standard
# library's wsgiref. lbaws runs this file once per request, in its directory.
import os
import sys

# A fresh interpreter per request gains nothing from bytecode caches, and the
# script's directory may be read-only: write none (no __pycache__ beside it).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wsgiref.handlers import CGIHandler  # noqa: E402

from app import application  # noqa: E402

CGIHandler().run(application)
