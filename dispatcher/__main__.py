"""`python -m frontdesk.dispatcher`: the dispatcher (its handlers and rate limiter as children), with settings from the environment."""
import sys

from frontdesk.protocol.process import run_role

from .arbiter import main

# the access token is its rate limiter's: a descriptor from `frontdesk run` is handed on unread
sys.exit(run_role("dispatcher", main, unread_secrets=("channel_access_token",)))
