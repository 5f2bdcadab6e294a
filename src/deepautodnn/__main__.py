from deepautodnn.cli import main

raise SystemExit(main())
