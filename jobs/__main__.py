"""``python -m jobs``: run the lakeops scheduler for the configured lake until SIGINT/SIGTERM."""

from jobs import main

main()
