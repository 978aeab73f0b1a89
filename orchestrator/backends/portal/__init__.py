"""labeljob's self-hosted job portal: the backend, and its web app (database, leasing, media, tokens,
pages, server) with simulated workers."""
