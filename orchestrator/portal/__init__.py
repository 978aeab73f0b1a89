"""labeljob's self-hosted job portal: database, leasing, web app, tokens and simulated workers."""
