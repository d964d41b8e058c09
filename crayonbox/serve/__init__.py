"""The web page and JSON API (`crayonbox serve`): `app.create_app(...)` on a continuous-batching
`scheduler.Scheduler`, which runs in a process of its own (`worker.WorkerProcess`, the CLI's default) or in a
thread of the server. Kept import-free so that the CLI's `--help` stays instant; see docs/serving.md."""
