"""The local web app (`cnnlab serve`): a FastAPI JSON API over the core and a static page; needs the `web` extra."""
