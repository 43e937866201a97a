"""`python -m frontdesk ...`: the same as the `frontdesk` command."""
import sys

from frontdesk.cli import main

sys.exit(main())
