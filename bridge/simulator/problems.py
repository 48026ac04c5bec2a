"""The gateway's error answers (gateway.md section 8): type, title and HTTP status per operation."""

from __future__ import annotations

#: Dispatcher problems: name -> (title, status, or {operation: status}).
DISPATCHER = {
    "missing-token": ("Token non fornito.",
                      {"create": 403, "replace": 400, "metadata": 403, "delete": 400}),
    "mandatory-element-token": ("Token JWT non valido.",
                                {"create": 403, "replace": 403, "metadata": 403, "delete": 401}),
    "jwt-validation": ("Campo token JWT non valido.", 403),
    "mandatory-element": ("Campo obbligatorio non presente.", 400),
    "invalid-format": ("Formato campo non valido.", 400),
    "id-doc": ("Campo id documento non valido", 400),
    "empty-file": ("File vuoto.", 400),
    "document-type": ("Il documento non è pdf.", {"create": 415, "replace": 400}),
    "sign-error": ("Sign error", 400),
    "cda-element": ("Errore in fase di estrazione del CDA.", 400),
    "workflow-id-error-extraction": ("Errore in fase di estrazione del workflow id.", 400),
    "syntax": ("Errore di sintassi.", 400),
    "semantic": ("Errore semantico.", 422),
    "vocabulary": ("Errore vocabolario.", 400),
    "document-hash": ("Verifica hash fallita.", 400),
    "generic-error": ("Errore generico.", 400),
    "record-not-found": ("Record non trovato.", 404),
    "ini-error": ("Ini error.", 409),
}

#: Front-end (GovWay) problems, all 401.
GOVWAY = {"TokenAuthenticationRequired", "TokenAuthenticationFailed", "TokenInTheFuture", "TokenExpired"}


class Problem(Exception):
    """A refusal: raised by a check, turned into an RFC 7807 answer by the server."""

    def __init__(self, name: str, detail: str, *, status: int | None = None):
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail
        self.forced_status = status

    @property
    def govway(self) -> bool:
        return self.name in GOVWAY

    def status_for(self, operation: str) -> int:
        if self.forced_status is not None:
            return self.forced_status
        if self.govway:
            return 401
        status = DISPATCHER[self.name][1]
        if isinstance(status, dict):
            return status.get(operation, 400)
        return status

    def body(self, operation: str, *, instance: str, trace_id: str, span_id: str,
             workflow_instance_id: str | None = None) -> dict:
        status = self.status_for(operation)
        if self.govway:
            return {"type": f"https://govway.org/handling-errors/{status}/{self.name}.html",
                    "title": self.name, "status": status, "detail": self.detail,
                    "govway_id": trace_id}
        body = {"type": f"/msg/{self.name}", "title": DISPATCHER[self.name][0], "status": status,
                "detail": self.detail, "instance": instance, "traceID": trace_id, "spanID": span_id}
        if workflow_instance_id is not None:
            body["workflowInstanceId"] = workflow_instance_id
        return body
