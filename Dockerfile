# CPU image of crayonbox, built by the README's own commands: install, a first grid, the test suite.
#   docker build -t crayonbox .
#   docker run --rm -v "$PWD:/out" crayonbox generate "a red apple" -o /out/grid.png
# Debian 12 and Python 3.11: the system and Python the project's suite runs on (install.sh needs apt).
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1
WORKDIR /crayonbox
COPY . .

# system packages, .venv with the CPU torch, crayonbox[all,dev] and open_clip
RUN ./install.sh && rm -rf /var/lib/apt/lists/*
RUN .venv/bin/crayonbox generate "a woman with medium-dark skin tone on a yellow background" -o grid.png
# the whole suite, as the README runs it (about 6 minutes on 2 CPU cores; Chromium runs headless as root
# with --no-sandbox, see tests/serve/test_serve_browser.py)
RUN .venv/bin/python -m pytest -q && rm -rf .pytest_cache

ENV PATH=/crayonbox/.venv/bin:$PATH
EXPOSE 8000
ENTRYPOINT ["crayonbox"]
CMD ["--help"]
