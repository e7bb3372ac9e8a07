from django.urls import path

from hafen.web.views import (
    audit,
    auth,
    backups,
    calendar,
    dashboard,
    health,
    instance_actions,
    instances,
    logs,
    mail,
    nodes,
    operations,
    organisations,
    rollouts,
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
    path("instances/<slug:name>/update", instance_actions.update, name="instance-update"),
    path("instances/<slug:name>/policy", instance_actions.policy, name="instance-policy"),
    path("instances/<slug:name>/events", calendar.add, name="instance-event-add"),
    path("instances/<slug:name>/events/<int:event_id>/remove", calendar.remove, name="instance-event-remove"),
    path("calendar", calendar.index, name="calendar"),
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
    path("orgs/<slug:slug>/labels", organisations.label, name="organisation-labels"),
    path("orgs/<slug:slug>/window", organisations.window, name="organisation-window"),
    path("orgs/<slug:slug>/webhook", organisations.webhook, name="organisation-webhook"),
    path("orgs/<slug:slug>/members", organisations.add_member, name="organisation-member-add"),
    path("orgs/<slug:slug>/members/<str:username>", organisations.change_member, name="organisation-member-change"),
    path("orgs/<slug:slug>/members/<str:username>/remove", organisations.remove_member,
         name="organisation-member-remove"),
    path("rollouts", rollouts.index, name="rollouts"),
    path("rollouts/<int:rollout_id>", rollouts.detail, name="rollout"),
    path("rollouts/<int:rollout_id>/progress", rollouts.progress, name="rollout-progress"),
    *(
        path(f"rollouts/<int:rollout_id>/{action}", rollouts.control, {"action": action}, name=f"rollout-{action}")
        for action in rollouts.CONTROLS
    ),
    path("audit", audit.index, name="audit"),
    path("logs", logs.index, name="logs"),
    path("logs/tail", logs.tail, name="logs-tail"),
    path("errors", logs.errors, name="errors"),
    path("errors/<int:group_id>", logs.error, name="error"),
    path("mail", mail.index, name="mail"),
    path("mail/test", mail.test, name="mail-test"),
    path("nodes", nodes.index, name="nodes"),
    path("nodes/rows", nodes.rows, name="node-rows"),
    path("nodes/<str:node>/label", nodes.label, name="node-label"),
    path("nodes/<str:node>/drain", nodes.drain, name="node-drain"),
    path("nodes/<str:node>/activate", nodes.activate, name="node-activate"),
    path("nodes/<str:node>/evacuate", nodes.evacuate, name="node-evacuate"),
    path("nodes/<str:node>/remove", nodes.remove, name="node-remove"),
    path("tokens", tokens.index, name="tokens"),
    path("tokens/<int:token_id>/revoke", tokens.revoke, name="token-revoke"),
]

# charts, the fleet view and the alerts (hafen/web/views/metrics.py)
from hafen.web.views import metrics  # noqa: E402

urlpatterns += metrics.urlpatterns
