# ccxt-collector: one image for every role (produce, archive, cache, monitor, status, emulate).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY consumers ./consumers
COPY emulator ./emulator
COPY cli ./cli
COPY deploy/constraints.txt ./deploy/constraints.txt
RUN pip install --no-cache-dir --prefix=/install -c deploy/constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 collector && mkdir -p /archive && chown collector /archive
COPY --from=build /install /usr/local
USER collector
WORKDIR /home/collector
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["ccxt-collector"]
CMD ["--help"]
