from starchart.cli import main

raise SystemExit(main())
