import sys

from vlp.cli.main import main

sys.exit(main())
