"""The web page and JSON API (`crayonbox serve`): `app.create_app(pipe)` on a continuous-batching
`scheduler.Scheduler`. Kept import-free so that the CLI's `--help` stays instant; see docs/serving.md."""
