"""Command-line front ends. Only this package prints, sets threads and chooses exit codes."""
