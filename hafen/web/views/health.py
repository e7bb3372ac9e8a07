from django.http import HttpRequest, JsonResponse

from hafen.instances.models import ControlPlane, Instance
from hafen.instances.services import heartbeat_fresh


def healthz(request: HttpRequest) -> JsonResponse:
    plane = ControlPlane.objects.filter(pk=1).first()
    return JsonResponse(
        {
            "controller": {"pid": plane.pid if plane else None, "beat_at": plane.beat_at if plane else None,
                           "running": heartbeat_fresh(plane.beat_at if plane else None),
                           "pass_seconds": plane.pass_seconds if plane else None,
                           "resting": plane.resting if plane else None},
            "instances": Instance.objects.count(),
        }
    )
