"""nerfstudio registrations for gnerf (entry points ``nerfstudio.method_configs`` / ``nerfstudio.dataparser_configs``)."""
