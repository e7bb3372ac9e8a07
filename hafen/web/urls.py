from django.urls import path

from hafen.web.views import (
    audit,
    auth,
    backups,
    dashboard,
    health,
    instance_actions,
    instances,
    operations,
    organisations,
    tokens,
)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("login", auth.login, name="login"),
    path("logout", auth.logout, name="logout"),
    path("", dashboard.dashboard, name="dashboard"),
    path("rows", dashboard.rows, name="dashboard-rows"),
    path("instances/new", instances.new, name="instance-new"),
    path("instances/<slug:name>", instances.detail, name="instance"),
    path("instances/<slug:name>/status", instances.status, name="instance-status"),
    path("instances/<slug:name>/logs", instances.logs, name="instance-logs"),
    *(
        path(f"instances/<slug:name>/{action}", instance_actions.change, {"action": action}, name=f"instance-{action}")
        for action in instance_actions.CHANGES
    ),
    path("instances/<slug:name>/scale", instance_actions.scale, name="instance-scale"),
    path("instances/<slug:name>/erase", instance_actions.erase, name="instance-erase"),
    path("instances/<slug:name>/passwd", instance_actions.new_password, name="instance-passwd"),
    path("instances/<slug:name>/credentials", instance_actions.credentials, name="instance-credentials"),
    path("instances/<slug:name>/locks", instance_actions.add_lock, name="instance-lock"),
    path("instances/<slug:name>/locks/<int:lock_id>/remove", instance_actions.remove_lock, name="instance-unlock"),
    path("instances/<slug:name>/backups", backups.listing, name="instance-backups"),
    path("instances/<slug:name>/backup", backups.backup, name="instance-backup"),
    path("instances/<slug:name>/backups/<str:snapshot>/verify", backups.verify, name="instance-verify"),
    path("instances/<slug:name>/restore", backups.restore, name="instance-restore"),
    path("instances/<slug:name>/restore-into", backups.restore_into, name="instance-restore-into"),
    path("instances/<slug:name>/clone", backups.clone, name="instance-clone"),
    path("instances/<slug:name>/backup-policy", backups.policy, name="instance-backup-policy"),
    path("operations/<int:operation_id>", operations.detail, name="operation"),
    path("operations/<int:operation_id>/progress", operations.progress, name="operation-progress"),
    path("orgs", organisations.index, name="organisations"),
    path("orgs/<slug:slug>", organisations.detail, name="organisation"),
    path("orgs/<slug:slug>/members", organisations.add_member, name="organisation-member-add"),
    path("orgs/<slug:slug>/members/<str:username>", organisations.change_member, name="organisation-member-change"),
    path("orgs/<slug:slug>/members/<str:username>/remove", organisations.remove_member,
         name="organisation-member-remove"),
    path("audit", audit.index, name="audit"),
    path("tokens", tokens.index, name="tokens"),
    path("tokens/<int:token_id>/revoke", tokens.revoke, name="token-revoke"),
]
