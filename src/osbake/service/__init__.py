"""The build console: REST API, web UI, queue, scheduler, storage and workers.

`create_app(settings)` (osbake.service.app) is the web application; workers
(osbake.service.worker) take builds from the queue and run the same
`osbake build` as the CLI, reporting back to the console over HTTP.
"""
