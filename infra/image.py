"""The application image: an ECR repository, and the image built from the project's Dockerfile
and pushed there by digest (unless a prebuilt ``image.uri`` is given).

The image is built by ``pulumi-docker-build`` (buildx/BuildKit), which hashes the build context
itself (``.dockerignore`` applied) to decide when to rebuild, and pushed *by digest*, with no
tag: the repository's tags are immutable (Security Hub ECR.2), and a push that carries no tag
cannot collide with an existing one, whatever made the provider rebuild (another checkout path,
file modes, a provider upgrade, an interrupted ``up``). Task definitions run
``<repository>@sha256:<digest>``. The context and Dockerfile are given relative to the project
directory (Pulumi runs the program there), so no input depends on where the checkout lives.
Previews do not build (``buildOnPreview`` false), so ``pulumi preview`` needs no Docker daemon.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.cluster import AwsContext

#: Images the lifecycle policy keeps (rollback targets); older ones are expired (ECR.3).
KEEP_IMAGES = 20
#: The image's platform for each task CPU architecture (``cpuArchitecture``).
PLATFORMS = {
    "X86_64": docker_build.Platform.LINUX_AMD64,
    "ARM64": docker_build.Platform.LINUX_ARM64,
}
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?/"
    r"(?P<repository>[^:@]+)"
)


def ecr_repository(image_uri: str) -> tuple[str, str, str] | None:
    """(account, region, repository) of an ECR image URI; None for other registries."""
    match = _ECR_URI.match(image_uri)
    if match is None:
        return None
    return match["account"], match["region"], match["repository"]


@dataclass(frozen=True)
class ImageArgs:
    """Arguments of ``Image``.

    - ``context``: the Docker build context, relative to the directory Pulumi runs the program
      in (the project root: "."). Required unless ``image_uri``.
    - ``dockerfile``: the Dockerfile, relative to the same directory. Default
      ``<context>/Dockerfile``.
    - ``image_uri``: a prebuilt image; nothing is built or pushed. Default None.
    - ``force_delete``: destroying the stack deletes the repository with its images (dev
      stacks). Default False.
    - ``keep_images``: images the lifecycle policy keeps. Default 20.
    - ``cpu_architecture``: the tasks' CPU architecture; the image is built for it. Default
      X86_64.
    - ``aws``: partition/region/account. Required.
    """

    aws: AwsContext
    context: str | None = None
    dockerfile: str | None = None
    image_uri: str | None = None
    force_delete: bool = False
    keep_images: int = KEEP_IMAGES
    cpu_architecture: str = "X86_64"


class Image(pulumi.ComponentResource):
    repository: aws.ecr.Repository
    #: What task definitions run: the pushed image's digest, or ``image_uri``.
    image_ref: pulumi.Output[str]
    #: ECR repositories the tasks pull from (for the execution role).
    pull_repository_arns: list[pulumi.Output[str]]

    def __init__(
        self, name: str, args: ImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Image", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True},
            force_delete=args.force_delete,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            name,
            repository=self.repository.name,
            policy=json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": f"Keep the last {args.keep_images} images",
                            "selection": {
                                "tagStatus": "any",
                                "countType": "imageCountMoreThan",
                                "countNumber": args.keep_images,
                            },
                            "action": {"type": "expire"},
                        }
                    ],
                }
            ),
            opts=child,
        )

        # The stack's own repository stays readable even with image.uri: CI may push there.
        self.pull_repository_arns = [self.repository.arn]
        if args.image_uri is not None:
            self.image_ref = pulumi.Output.from_input(args.image_uri)
            source = ecr_repository(args.image_uri)
            if source is not None:
                account, region, repository = source
                self.pull_repository_arns.append(
                    pulumi.Output.concat(
                        "arn:",
                        args.aws.partition,
                        ":ecr:",
                        region,
                        ":",
                        account,
                        ":repository/",
                        repository,
                    )
                )
        else:
            assert args.context is not None and args.dockerfile is not None  # _normalize
            token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
            image = docker_build.Image(
                name,
                context={"location": args.context},
                dockerfile={"location": args.dockerfile},
                platforms=[PLATFORMS[args.cpu_architecture]],
                # No tag: pushed by digest only (see the module docstring).
                push=False,
                exports=[
                    {
                        "registry": {
                            "names": [self.repository.repository_url],
                            "push_by_digest": True,
                        }
                    }
                ],
                registries=[
                    {
                        "address": self.repository.repository_url,
                        "username": token.user_name,
                        "password": pulumi.Output.secret(token.password),
                    }
                ],
                build_on_preview=False,
                opts=child,
            )
            self.image_ref = pulumi.Output.concat(
                self.repository.repository_url, "@", image.digest
            )

        self.register_outputs(
            {"repositoryUrl": self.repository.repository_url, "imageRef": self.image_ref}
        )

    @staticmethod
    def _normalize(args: ImageArgs) -> ImageArgs:
        if args.keep_images < 1:
            raise ValueError("keep_images: must be >= 1")
        if args.cpu_architecture not in PLATFORMS:
            raise ValueError(f"cpu_architecture: one of {', '.join(PLATFORMS)}")
        if args.image_uri is not None:
            return args
        if args.context is None:
            raise ValueError("context: required when no image_uri is given")
        if Path(args.context).is_absolute():
            raise ValueError(f"context: {args.context!r} must be relative to the project directory")
        dockerfile = os.path.normpath(args.dockerfile or os.path.join(args.context, "Dockerfile"))
        if not Path(dockerfile).is_file():
            raise ValueError(f"dockerfile: {dockerfile} does not exist")
        return ImageArgs(
            aws=args.aws,
            context=args.context,
            dockerfile=dockerfile,
            force_delete=args.force_delete,
            keep_images=args.keep_images,
            cpu_architecture=args.cpu_architecture,
        )
