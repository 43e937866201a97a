"""`python -m frontdesk.ratelimiter`: the rate limiter (started by a dispatcher: frames on stdin and stdout), with settings from the environment."""
import sys

from frontdesk.protocol.process import run_role

from .limiter import main

sys.exit(run_role("ratelimiter", main))
