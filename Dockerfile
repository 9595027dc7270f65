# CPU serving image: serving dependencies only (no torch), non-root, bundle mounted at /models/bundle.
#   docker build -t rewardserve .
#   docker run -p 8000:8000 -v $PWD/models/default/bundle:/models/bundle:ro rewardserve
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rewardserve ./rewardserve
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --no-create-home rewardserve
USER 10001
ENV REWARDSERVE_BUNDLE=/models/bundle
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"]
# Exec form: SIGTERM reaches the server directly. Bind all interfaces inside the container only.
ENTRYPOINT ["rewardserve", "serve", "--bundle", "/models/bundle", "--host", "0.0.0.0", "--port", "8000"]
