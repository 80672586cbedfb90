"""The thin HTTP layer: each module's handlers fetch their service from DI and return schemas."""

from gptzoo.server.routes import admin, completions, health, models

ROUTES = [*completions.ROUTES, *models.ROUTES, *health.ROUTES, *admin.ROUTES]
