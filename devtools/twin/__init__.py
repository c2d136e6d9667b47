"""A twin of ECS on Fargate, on this machine: the rendered task definitions run as ECS and
Fargate run them, without a container engine.

- ``deployed_stack``: the stack's services, load balancer and schedule, as the program renders
  them (``TwinCluster``), with ``control`` (an operator's AWS CLI, over HTTP);
- ``service`` (desired count, rolling deployments, circuit breaker), ``task`` (one task: its
  network, container, health and scale-in protection), ``loadbalancer`` (the web's listener and
  target group), ``events`` (EventBridge rules and their one-off tasks);
- ``container`` (one container under Fargate's contract) and ``launcher`` (run it in Linux
  namespaces), from ``dockerfile_image`` (the project's image, read from its Dockerfile);
- ``awsvpc`` (a network namespace and address per task, on one bridge), ``relay`` (a TCP relay
  on that bridge), ``agent`` (the ECS agent's task protection endpoint).
"""
