//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations and
//! response types, served at `/api/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "browser-sip-gateway REST API",
        version = "1",
        description = "For WWE and operators: registrations, calls, the SIP upstream, live events and metrics (REST.md v1)."
    ),
    paths(
        super::health,
        super::dn_list,
        super::dn_one,
        super::upstream_status,
        super::calls_active,
        super::call_one,
        super::call_hangup,
        super::cti::answer,
        super::cti::hold,
        super::cti::unhold,
        super::cti::dtmf,
        super::cti::transfer,
        super::cti::dial,
        super::session_disconnect,
        super::events::events,
        super::metrics,
        serve,
    ),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "This document", content_type = "application/json", body = Object),
        (status = 401, body = super::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = serde_json::to_value(super::document()).unwrap();
        for path in [
            "/api/health",
            "/api/dn/list",
            "/api/dn/{dn}",
            "/api/genesys/status",
            "/api/calls/active",
            "/api/calls/{callId}",
            "/api/calls/{callId}/hangup",
            "/api/sessions/{sessionId}/disconnect",
            "/api/events",
            "/api/openapi.json",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert!(doc["components"]["schemas"]["CallView"].is_object());
    }
}
