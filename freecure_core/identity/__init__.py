"""Identity branches: how each personalization model's foundation branch (FD) is built."""
