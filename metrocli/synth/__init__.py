"""The project's own ray caster (Open3D RaycastingScene): rendered photos with exactly known geometry."""
