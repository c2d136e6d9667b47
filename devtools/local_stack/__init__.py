"""The local stack: the dev stack's services on the ECS twin, with one command (``make run``).

``__main__`` is the command (``python -m devtools.local_stack``); ``metric_lines`` shows the
containers' metric lines the way a person reads them.
"""
