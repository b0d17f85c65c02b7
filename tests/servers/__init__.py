"""Real servers in real processes: uvicorn, gunicorn, the demo."""
