"""`python -m frontdesk.dispatcher`: the dispatcher (its handlers and rate limiter as children), with settings from the environment."""
import sys

from frontdesk.protocol.process import run_role

from .arbiter import main

# the token (or what its token source issues one with) is its rate limiter's: descriptors from
# `frontdesk run` are handed on unread
sys.exit(run_role("dispatcher", main, unread_secrets=("channel_access_token", "channel_secret", "channel_private_key")))
