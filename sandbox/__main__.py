"""`python -m frontdesk.sandbox`: the local LINE Messaging API emulator, with settings from the environment."""
import sys

from frontdesk.protocol.process import run_role

from .server import main

sys.exit(run_role("sandbox", main))
