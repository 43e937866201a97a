"""`frontdesk bench`: the load generators and every benchmark suite (e2e with --chaos, compare and
its baseline, and one suite per component). Nothing but the command imports this package."""
