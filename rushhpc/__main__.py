import sys

from rushhpc.ui.cli import main

sys.exit(main())
