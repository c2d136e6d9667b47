"""The application image: an ECR repository, and the image built from the project's Dockerfile
and pushed there (unless a prebuilt ``imageUri`` is given)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.cluster import AwsContext

#: Images the lifecycle policy keeps (rollback targets); older ones are expired (ECR.3).
KEEP_IMAGES = 20
#: The image's platform for each task CPU architecture (``cpuArchitecture``).
PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?/"
    r"(?P<repository>[^:@]+)"
)


def _dockerignore_patterns(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line of ``.dockerignore``, Docker's syntax: ``*``, ``?`` and
    ``[...]`` within a path segment, ``**`` across segments, ``!`` re-includes, the last match
    wins, and a pattern matching a directory covers everything below it."""
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "[" and "]" in pattern[index + 1 :]:
                end = pattern.index("]", index + 1)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[index], re.escape(pattern[index]))
                index += 1
        patterns.append((exception, re.compile(f"^{regex}(?:/.*)?$")))
    return patterns


def dockerignore_excludes(context: Path) -> Callable[[str], bool]:
    """Whether Docker leaves a path (relative to ``context``) out of the build context."""
    patterns = _dockerignore_patterns(context)

    def excluded(relative: str) -> bool:
        result = False
        for exception, regex in patterns:
            if regex.match(relative):
                result = not exception
        return result

    return excluded


def context_tag(context: Path, dockerfile: Path) -> str:
    """A tag that changes whenever the image's inputs change.

    Hashes the Dockerfile, ``.dockerignore`` and the path and content of every file Docker
    sends with the context (``.dockerignore`` applied), so an unchanged context keeps its tag
    (ECR tags are immutable: a rebuilt image must get a new one). When unsure whether a file is
    excluded, it is hashed: an extra rebuild is harmless, a missed change would be a push to an
    existing tag.
    """
    prune_directories = not any(exception for exception, _ in _dockerignore_patterns(context))
    excluded = dockerignore_excludes(context)

    digest = hashlib.sha256()
    # Docker always reads these two, even when .dockerignore lists them.
    ignore_file = context / ".dockerignore"
    for always in (dockerfile, ignore_file):
        digest.update(always.read_bytes() if always.is_file() else b"")
        digest.update(b"\0")
    for directory, subdirectories, files in os.walk(context):
        relative_dir = os.path.relpath(directory, context)
        if prune_directories:
            subdirectories[:] = [
                name
                for name in subdirectories
                if not excluded(os.path.normpath(os.path.join(relative_dir, name)))
            ]
        subdirectories.sort()
        for name in sorted(files):
            relative = os.path.normpath(os.path.join(relative_dir, name))
            full = Path(directory, name)
            if excluded(relative) or not full.is_file():
                continue
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.sha256(full.read_bytes()).digest())
    return f"ctx-{digest.hexdigest()[:20]}"


def ecr_repository(image_uri: str) -> tuple[str, str, str] | None:
    """(account, region, repository) of an ECR image URI; None for other registries."""
    match = _ECR_URI.match(image_uri)
    if match is None:
        return None
    return match["account"], match["region"], match["repository"]


@dataclass(frozen=True)
class ImageArgs:
    """Arguments of ``Image``.

    - ``context``: the Docker build context (the project root). Required unless ``image_uri``.
    - ``dockerfile``: path of the Dockerfile. Default ``<context>/Dockerfile``.
    - ``image_uri``: a prebuilt image; nothing is built or pushed. Default None.
    - ``force_delete``: destroying the stack deletes the repository with its images (dev
      stacks). Default False.
    - ``keep_images``: images the lifecycle policy keeps. Default 20.
    - ``cpu_architecture``: the tasks' CPU architecture; the image is built for it. Default
      X86_64.
    - ``aws``: partition/region/account. Required.
    """

    aws: AwsContext
    context: Path | None = None
    dockerfile: Path | None = None
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

        # The stack's own repository stays readable even with imageUri: CI may push there.
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
            tag = context_tag(args.context, args.dockerfile)
            token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
            image = docker.Image(
                name,
                build=docker.DockerBuildArgs(
                    context=str(args.context),
                    dockerfile=str(args.dockerfile),
                    platform=PLATFORMS[args.cpu_architecture],
                ),
                image_name=pulumi.Output.concat(self.repository.repository_url, ":", tag),
                registry=docker.RegistryArgs(
                    server=self.repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                ),
                opts=child,
            )
            self.image_ref = image.repo_digest

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
        dockerfile = args.dockerfile or args.context / "Dockerfile"
        if not dockerfile.is_file():
            raise ValueError(f"dockerfile: {dockerfile} does not exist")
        return ImageArgs(
            aws=args.aws,
            context=args.context,
            dockerfile=dockerfile,
            force_delete=args.force_delete,
            keep_images=args.keep_images,
            cpu_architecture=args.cpu_architecture,
        )
