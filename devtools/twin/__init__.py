"""A twin of ECS on Fargate, on this machine: the rendered task definitions run as Fargate runs
them (``container``, ``launcher``), from the project's image as the Dockerfile defines it
(``image``)."""
