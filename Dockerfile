# syntax=docker/dockerfile:1

# Build stage: install conveyor and its dependencies into a virtualenv, so the runtime
# image gets the installed packages without pip's caches or the source tree.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY application ./application
COPY eventstore ./eventstore
COPY messaging ./messaging
COPY workers ./workers
COPY conveyor ./conveyor
RUN pip install .


FROM python:3.11-slim

ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --create-home --home-dir /home/conveyor conveyor

COPY --from=build /opt/conveyor /opt/conveyor

# A writable working directory: the default SQLite event store lives in ./.conveyor.
WORKDIR /home/conveyor
USER conveyor

ENTRYPOINT ["conveyor"]
CMD ["run"]
