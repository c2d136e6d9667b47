"""What the tests and benches start on this machine: processes and servers, not tests.

- ``redis_server``: a throwaway redis-server on a free loopback port (the local stack and
  ``noxfile.py`` start theirs here too);
- ``processes``: the app's processes run directly, stopped as ECS stops them;
- ``rendered_worker``: a worker run on the ECS twin exactly as its rendered task definition says;
- ``aws_standin``: stand-ins of AWS's APIs (moto's server, endpoints that hang or throttle);
- ``envs``: virtualenvs built the way each entry point's runner builds them, cached.

``tests/support.py`` holds what only the tests share (fixtures' helpers, the shared program run).
"""
