// Starts Swagger UI on the API's own OpenAPI document (no inline script: the page is
// served with a strict Content-Security-Policy).
'use strict';
window.addEventListener('DOMContentLoaded', function () {
  window.ui = SwaggerUIBundle({
    url: '/api/v1/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
  });
});
