"""The pure parts of the methods: no files, no models, only the rules (eva's creator, pair building, length control)."""
