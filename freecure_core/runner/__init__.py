"""The headless runner: run a ComfyUI workflow without the browser, in an embedded (in-process) ComfyUI or on one or
more running servers (``python -m freecure_core.run``, the benchmark protocol, ``make demo``).  Pure Python: the
embedded ComfyUI is ``freecure_core.comfy_bridge.embedded``, the only ComfyUI import, loaded when a run needs it.

Modules:
    cli              the command line ``python -m freecure_core.run`` (arguments, exit status)
    run              the engine: ``run_workflow(workflow, options, out)`` with ``RunOptions``, ``RunResult`` and
                     ``Job``; embedded and server modes, Ctrl-C handling
    workflow_format  UI/API workflow formats, UI-to-API conversion, ``--set``/``--sweep`` syntax
    server_client    a standard-library client for a running ComfyUI (HTTP routes and the ``/ws`` WebSocket)
    progress         progress lines from ComfyUI's execution messages
    record           ``record.json``: what ran, where, with which inputs, and what came out
"""
