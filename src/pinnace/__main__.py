import sys

from pinnace.cli.main import main

sys.exit(main())
