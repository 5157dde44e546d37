# syntax=docker/dockerfile:1

# Build stage: install conveyor and its dependencies into a virtualenv, so the runtime
# image gets the installed packages without pip's caches or the source tree.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/conveyor
ENV PATH=/opt/conveyor/bin:$PATH

WORKDIR /src
# Dependencies first, exactly as locked: every file's hash is checked, so a tampered or
# substituted package fails the build instead of entering the image.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
# Only the packages (pyproject's packages.find list): nothing else of the context, so no
# deploy/secrets, .env or local databases can end up in an image layer.
COPY domain ./domain
COPY messaging ./messaging
COPY workers ./workers
COPY conveyor ./conveyor
# conveyor itself, without resolving anything again (its dependencies are installed above)
RUN pip install --no-deps .


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

# No credentials here: give them at run time, preferably as files (CONVEYOR_AMQP_URL_FILE=
# /run/secrets/…; see docker-compose.yml). The defaults only reach a broker on localhost.
ENTRYPOINT ["conveyor"]
CMD ["run"]
