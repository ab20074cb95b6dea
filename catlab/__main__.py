import sys

from catlab.cli import main

sys.exit(main())
