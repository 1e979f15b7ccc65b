from normspec.cli import main

raise SystemExit(main())
