"""`python -m frontdesk.receiver`: the webhook receiver, with settings from the environment."""
import sys

from frontdesk.protocol.process import run_role

from .server import main

sys.exit(run_role("receiver", main))
