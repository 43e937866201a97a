"""`python -m frontdesk.dispatcher`: the dispatcher (its handlers and rate limiter as children), with settings from the environment."""
import sys

from frontdesk.protocol.roles import run_role

from .arbiter import main

sys.exit(run_role("dispatcher", main))
