from smsp_exporter.cli import main

raise SystemExit(main())
