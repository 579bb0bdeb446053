"""Writing results: depth/normal maps, point clouds and meshes, previews. Every write is atomic."""
