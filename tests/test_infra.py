"""Offline checks of the deployment templates (infra/, azure.yaml, .funcignore).

No Bicep CLI exists here, so these tests parse every .bicep file with tree-sitter-bicep and walk
the syntax tree (tests/bicep_tree.py). They prove syntax and structure: which resources exist,
with which security properties, which app settings, which role assignments. They do not prove
that ARM accepts the templates (API versions, property schemas, quotas): only a real deployment
or `az deployment group what-if` does. See docs/deploy.md.

Requires: pip install -r requirements-infra-check.txt
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter import config
from tests.bicep_tree import BicepFile, BicepProject, Expr, Interp, Resource

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"

# ---------------------------------------------------------------------------------------------
# The rules, stated once
# ---------------------------------------------------------------------------------------------

# Settings in config.SETTING_NAMES that the templates must NOT set, and why.
EXCLUDED_SETTINGS = {
    "AzureWebJobsStorage": "a connection string needs shared-key access, which is off; the "
    "identity-based AzureWebJobsStorage__* settings replace it",
    "EXPORTER_DEV_MODE": "development only; the app refuses to start with it in Azure",
    "EXPORTER_DEV_SECRETS_FILE": "development only: the development key store, never used in Azure",
    "WEBSITE_AUTH_ENABLED": "set by the platform itself when App Service Authentication is on",
}

# Settings the templates set although the app's code does not read them: the platform reads them.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential": "the Functions host: use a managed identity for its storage",
    "AZURE_CLIENT_ID": "the Azure SDK's DefaultAzureCredential: which managed identity to use",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "the Functions host: where telemetry goes",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the Functions host: Entra ID auth for telemetry",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Functions Python worker: configure the Azure Monitor "
    "OpenTelemetry distro and stream the app's spans and logs itself (exporter/telemetry.py)",
}

# Settings that must never appear, whatever config.py says.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "not used on Flex Consumption (functionAppConfig.runtime is)",
    "FUNCTIONS_EXTENSION_VERSION": "not used on Flex Consumption",
    "WEBSITE_RUN_FROM_PACKAGE": "Flex Consumption deploys from functionAppConfig.deployment",
}

ROLE = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
ROLE_NAME = {v: k for k, v in ROLE.items()}

# Roles allowed per type of scope.
ALLOWED_ROLES_BY_SCOPE_TYPE = {
    "Microsoft.Storage/storageAccounts": {
        ROLE["Storage Blob Data Owner"],
        ROLE["Storage Blob Data Reader"],
        ROLE["Storage Queue Data Contributor"],
        ROLE["Storage Table Data Contributor"],
    },
    "Microsoft.KeyVault/vaults": {ROLE["Key Vault Secrets Officer"]},
    "Microsoft.Insights/components": {ROLE["Monitoring Metrics Publisher"]},
}

# Every role the app identity gets: (file under infra/, symbol of the scope resource) -> roles.
APP_IDENTITY_ROLES = {
    ("app/rbac.bicep", "storageAccount"): {
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    },
    ("app/rbac.bicep", "vault"): {"Key Vault Secrets Officer"},
    ("app/rbac.bicep", "applicationInsights"): {"Monitoring Metrics Publisher"},
    ("app/export-storage-reader.bicep", "exportStorageAccount"): {"Storage Blob Data Reader"},
}

# The one role assignment for someone other than the app identity: optional, off by default.
DEPLOYER_ASSIGNMENT = ("app/rbac.bicep", "deployerKeyVaultSecretsOfficer")

FUNCIGNORE_MUST_EXCLUDE = [
    "tests/", "devtools/", "benchmarks/", "docs/", "node_modules/", ".venv/", "infra/", ".local/",
    ".ci/", ".git", "local.settings.json", "__pycache__/", ".pytest_cache/", "azure.yaml",
    "requirements-dev.txt", "requirements-infra-check.txt", "package.json", "package-lock.json", "pyproject.toml",
    "exporter/devhost/",
]
FUNCIGNORE_MUST_KEEP = ["function_app.py", "host.json", "requirements.txt", "exporter/"]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@pytest.fixture(scope="module")
def project() -> BicepProject:
    return BicepProject(INFRA)


@pytest.fixture(scope="module")
def main(project) -> BicepFile:
    return project.file("main.bicep")


@pytest.fixture(scope="module")
def api(project) -> BicepFile:
    return project.file("app/api.bicep")


@pytest.fixture(scope="module")
def app_settings(api) -> dict:
    settings = [r for r in api.resources_of_type("Microsoft.Web/sites/config") if r.get("name") == "appsettings"]
    assert len(settings) == 1, f"expected one sites/config 'appsettings' in app/api.bicep, found {len(settings)}"
    props = settings[0].get("properties")
    assert isinstance(props, dict), "appsettings properties must be an object literal so every name is visible"
    return props


def one(resources: list[Resource], what: str) -> Resource:
    assert len(resources) == 1, f"expected exactly one {what}, found {[r.where for r in resources]}"
    return resources[0]


def text(value) -> str:
    return str(value) if isinstance(value, (Expr, Interp)) else repr(value)


def module_param(project: BicepProject, target: BicepFile, param: str):
    """The value main.bicep passes to ``param`` of the module file ``target`` (exactly one caller)."""
    callers = project.modules_of(target)
    assert len(callers) == 1, f"{target.name} should be deployed by exactly one module, found {len(callers)}"
    params = callers[0].params
    if param in params:
        return callers[0].file.resolve(params[param])
    default = target.params[param]
    assert default.has_default, f"{callers[0].where} does not pass {param}, which has no default"
    return default.default


def identity_output(project: BicepProject, value, output: str) -> None:
    """Assert ``value`` is ``<module>.outputs.<output>`` of the module deploying the app identity."""
    identity_file = project.file("core/identity.bicep")
    (identity_module,) = project.modules_of(identity_file)
    expected = f"{identity_module.symbol}.outputs.{output}"
    assert text(value) == expected, f"expected {expected}, got {text(value)}"


# ---------------------------------------------------------------------------------------------
# Syntax
# ---------------------------------------------------------------------------------------------


def test_infra_has_bicep_files():
    assert (INFRA / "main.bicep").exists(), "infra/main.bicep is missing"
    assert len(BICEP_FILES) > 1


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_bicep_file_parses_without_errors(path):
    problems = BicepFile(path).syntax_problems()
    assert not problems, "syntax errors:\n" + "\n".join(
        f"  {path.relative_to(ROOT)}:{p.line}:{p.column}: {p.kind} near {p.text!r}" for p in problems
    )


def test_syntax_check_is_not_vacuous(tmp_path):
    broken = tmp_path / "broken.bicep"
    broken.write_text("param a string = 'x'\nresource r 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n")
    problems = BicepFile(broken).syntax_problems()
    assert problems, "a broken file must report syntax problems"
    assert all(p.line >= 2 for p in problems)


def test_modules_are_local_files_and_get_every_required_param(project):
    """Modules point at files under infra/ (registry modules cannot be checked offline) and the
    caller passes every parameter without a default, and only declared parameters."""
    for file in project:
        for module in file.modules:
            assert not module.path.startswith("br"), f"{module.where}: registry modules are not checked offline"
            assert module.target in project.files, f"{module.where}: no such file"
            target = project.files[module.target]
            passed = set(module.params)
            declared = set(target.params)
            required = {name for name, p in target.params.items() if not p.has_default}
            assert not passed - declared, f"{module.where}: passes undeclared params {sorted(passed - declared)}"
            assert not required - passed, f"{module.where}: misses required params {sorted(required - passed)}"


def test_every_module_file_is_used(project):
    for file in project:
        if file.name != "infra/main.bicep":
            assert project.modules_of(file), f"{file.name} is not deployed by any module"


def test_main_targets_a_resource_group(main):
    assert main.target_scope == "resourceGroup", "main.bicep is deployed with `az deployment group create`"


# ---------------------------------------------------------------------------------------------
# Function app on Flex Consumption
# ---------------------------------------------------------------------------------------------


def test_plan_is_flex_consumption(project):
    plan = one(project.resources_of_type("Microsoft.Web/serverfarms"), "App Service plan")
    assert plan.get("sku.name") == "FC1"
    assert plan.get("sku.tier") == "FlexConsumption"
    assert plan.get("properties.reserved") is True, "Linux plans need reserved: true"


def test_function_app_site(project, main):
    site = one(project.resources_of_type("Microsoft.Web/sites"), "function app")
    assert site.get("kind") == "functionapp,linux"
    assert site.get("properties.httpsOnly") is True
    assert site.get("properties.siteConfig.minTlsVersion") == "1.2"
    assert site.get("properties.siteConfig.ftpsState") == "Disabled"
    assert site.get("properties.functionAppConfig.runtime.name") == "python"
    runtime_version = site.get("properties.functionAppConfig.runtime.version")
    assert module_param(project, site.file, text(runtime_version)) == "3.11"
    assert site.get("tags").text.find("'azd-service-name': 'api'") > 0, "azd finds the app by tag azd-service-name"


def test_scale_settings_are_parameters(project, main):
    site = one(project.resources_of_type("Microsoft.Web/sites"), "function app")
    for name in ("maximumInstanceCount", "instanceMemoryMB"):
        value = site.get(f"properties.functionAppConfig.scaleAndConcurrency.{name}")
        passed = module_param(project, site.file, text(value))
        assert text(passed) == name and name in main.params, f"{name} must come from main.bicep param {name}"
        assert isinstance(main.params[name].default, int)


def test_deployment_package_uses_the_user_assigned_identity(project):
    site = one(project.resources_of_type("Microsoft.Web/sites"), "function app")
    storage = site.get("properties.functionAppConfig.deployment.storage")
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert text(storage["authentication"]["userAssignedIdentityResourceId"]) == "identityId"
    assert text(storage["value"]).endswith("primaryEndpoints.blob}${deploymentStorageContainerName}")
    assert site.get("identity.type") == "UserAssigned"
    assert list(site.get("identity.userAssignedIdentities")) == ["${identityId}"]
    identity_output(project, module_param(project, site.file, "identityId"), "id")
    identity_output(project, module_param(project, site.file, "identityClientId"), "clientId")


def test_app_identity_module_creates_a_user_assigned_identity(project):
    identity = project.file("core/identity.bicep")
    uami = one(identity.resources_of_type("Microsoft.ManagedIdentity/userAssignedIdentities"), "identity")
    assert text(identity.outputs["id"]) == f"{uami.symbol}.id"
    assert text(identity.outputs["principalId"]) == f"{uami.symbol}.properties.principalId"
    assert text(identity.outputs["clientId"]) == f"{uami.symbol}.properties.clientId"


# ---------------------------------------------------------------------------------------------
# App settings
# ---------------------------------------------------------------------------------------------


def test_excluded_settings_are_settings_the_code_knows():
    unknown = set(EXCLUDED_SETTINGS) - set(config.SETTING_NAMES)
    assert not unknown, f"EXCLUDED_SETTINGS names settings config.py no longer reads: {sorted(unknown)}"


def test_every_setting_the_code_reads_is_set(app_settings):
    expected = set(config.SETTING_NAMES) - set(EXCLUDED_SETTINGS)
    missing = sorted(expected - set(app_settings))
    assert not missing, (
        f"app/api.bicep does not set {missing}, read by exporter/config.py; set them or add them to "
        "EXCLUDED_SETTINGS with the reason"
    )


def test_no_unknown_setting_is_set(app_settings):
    known = set(config.SETTING_NAMES) | set(PLATFORM_SETTINGS)
    unknown = sorted(set(app_settings) - known)
    assert not unknown, (
        f"app/api.bicep sets {unknown}, which neither the code (config.SETTING_NAMES) nor the platform "
        "(PLATFORM_SETTINGS) reads"
    )


def test_excluded_and_forbidden_settings_are_not_set(app_settings):
    for name, reason in {**EXCLUDED_SETTINGS, **FORBIDDEN_SETTINGS}.items():
        assert name not in app_settings, f"{name} must not be set: {reason}"


def test_host_storage_settings_are_identity_based(app_settings):
    assert app_settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert text(app_settings["AzureWebJobsStorage__clientId"]) == "identityClientId"
    assert text(app_settings["AZURE_CLIENT_ID"]) == "identityClientId"
    for service in ("blob", "queue", "table"):
        value = app_settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert text(value) == f"storageAccount.properties.primaryEndpoints.{service}", text(value)


def test_storage_settings_point_at_the_apps_storage_account(api, project):
    storage_ref = api.resource("storageAccount")
    assert storage_ref.existing and storage_ref.type == "Microsoft.Storage/storageAccounts"
    assert text(storage_ref.get("name")) == "storageAccountName"
    storage_file = project.file("core/storage.bicep")
    (storage_module,) = project.modules_of(storage_file)
    assert text(module_param(project, api, "storageAccountName")) == f"{storage_module.symbol}.outputs.name"


def test_application_insights_settings_use_entra_id(app_settings):
    auth = app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert text(auth) == "ClientId=${identityClientId};Authorization=AAD"
    assert text(app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == (
        "applicationInsights.properties.ConnectionString"
    )


def test_telemetry_is_opentelemetry_from_host_and_worker(app_settings):
    """Microsoft's "Use OpenTelemetry with Azure Functions": the host in OpenTelemetry mode, and the
    Python worker exporting the app's own spans and logs (the run's ids as attributes)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host.get("telemetryMode") == "OpenTelemetry"
    assert app_settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^azure-monitor-opentelemetry==", requirements, re.M)


def test_app_setting_values_come_from_main_parameters_with_the_codes_defaults(project, main, api, app_settings):
    defaults = config.load_settings({"AzureWebJobsStorage__blobServiceUri": "https://example.invalid/"})
    expected = {
        "EXPORT_SCHEDULE": ("exportSchedule", config.DEFAULT_SCHEDULE),
        "OMNISEND_API_URL": ("omnisendApiUrl", config.OMNISEND_DEFAULT_URL),
        "REFRESH_SETTLE_SECONDS": ("refreshSettleSeconds", defaults.refresh_settle_seconds),
        "SECRET_CACHE_SECONDS": ("secretCacheSeconds", defaults.secret_cache_seconds),
        "OMNISEND_TIMEOUT_SECONDS": ("omnisendTimeoutSeconds", defaults.omnisend_timeout_seconds),
        "BATCH_CHECK_DELAY_SECONDS": ("batchCheckDelaySeconds", defaults.batch_check_delay_seconds),
    }
    for setting, (param, default) in expected.items():
        assert setting in app_settings, f"app/api.bicep does not set {setting}"
        value = app_settings[setting]
        if isinstance(value, Expr) and value.function == "string":
            value = value.arguments[0]
        assert text(value) == param, f"{setting} should be set from api.bicep param {param}, got {text(value)}"
        passed = module_param(project, api, param)
        assert text(passed) == param, f"main.bicep should pass its param {param} to {param}"
        assert main.params[param].default == default, (
            f"main.bicep param {param} defaults to {main.params[param].default!r}; the code's default is {default!r}"
        )


def test_key_vault_and_segment_settings(project, api, app_settings):
    assert text(app_settings["KEY_VAULT_URL"]) == "keyVaultUri"
    (kv_module,) = project.modules_of(project.file("core/keyvault.bicep"))
    assert text(module_param(project, api, "keyVaultUri")) == f"{kv_module.symbol}.outputs.uri"
    assert text(project.file("core/keyvault.bicep").outputs["uri"]) == "vault.properties.vaultUri"
    assert text(app_settings["SEGMENTS_BLOB_SERVICE_URI"]) == "segmentsBlobServiceUri"
    reader = project.file("app/export-storage-reader.bicep")
    (reader_module,) = project.modules_of(reader)
    assert text(module_param(project, api, "segmentsBlobServiceUri")) == f"{reader_module.symbol}.outputs.blobEndpoint"
    assert text(reader.outputs["blobEndpoint"]) == "exportStorageAccount.properties.primaryEndpoints.blob"


# ---------------------------------------------------------------------------------------------
# App Service Authentication
# ---------------------------------------------------------------------------------------------


def test_app_service_authentication_requires_entra_id(project, api, main):
    auth = one(
        [r for r in api.resources_of_type("Microsoft.Web/sites/config") if r.get("name") == "authsettingsV2"],
        "sites/config 'authsettingsV2'",
    )
    assert auth.get("properties.platform.enabled") is True
    assert auth.get("properties.globalValidation.requireAuthentication") is True
    assert auth.get("properties.globalValidation.unauthenticatedClientAction") == "Return401"
    aad = auth.get("properties.identityProviders.azureActiveDirectory")
    assert aad["enabled"] is True
    assert text(aad["registration"]["clientId"]) == "authClientId"
    assert text(aad["registration"]["openIdIssuer"]) == "authOpenIdIssuer"
    assert text(module_param(project, api, "authClientId")) == "authClientId"
    assert not main.params["authClientId"].has_default, "the Entra app registration's client id must be given"
    assert "authTenantId" in main.params
    issuer = module_param(project, api, "authOpenIdIssuer")
    assert isinstance(issuer, Interp), f"the issuer should be built from the tenant, got {text(issuer)}"
    assert "authTenantId" in text(issuer) and text(issuer).endswith("/v2.0"), text(issuer)


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def test_storage_account_allows_entra_id_only(project):
    account = one(project.resources_of_type("Microsoft.Storage/storageAccounts"), "storage account")
    assert account.get("properties.allowSharedKeyAccess") is False
    assert account.get("properties.allowBlobPublicAccess") is False
    assert account.get("properties.minimumTlsVersion") == "TLS1_2"


def _created_names(project, child_type: str, param: str) -> list:
    storage = project.file("core/storage.bicep")
    created = one(storage.resources_of_type(child_type), child_type)
    assert created.loop_item and text(created.loop_source) == param, f"{created.where} should loop over {param}"
    assert text(created.get("name")) == created.loop_item
    names = module_param(project, storage, param)
    if isinstance(names, Expr) and names.function == "concat":  # concat(always, optional)
        names = [n for arg in names.arguments for n in (main_resolve(project, arg) or [])]
    assert isinstance(names, list), f"{param} should be a list, got {text(names)}"
    return names


def main_resolve(project, value):
    value = project.file("main.bicep").resolve(value)
    return value if isinstance(value, list) else None


def test_queue_names_match_config(project):
    names = _created_names(project, "Microsoft.Storage/storageAccounts/queueServices/queues", "queueNames")
    expected = [
        config.QUEUE_RUNS,
        config.QUEUE_RUNS + config.POISON_SUFFIX,
        config.QUEUE_BATCHES,
        config.QUEUE_BATCHES + config.POISON_SUFFIX,
    ]
    assert sorted(names) == sorted(expected)


def test_table_names_match_config(project):
    names = _created_names(project, "Microsoft.Storage/storageAccounts/tableServices/tables", "tableNames")
    expected = [value for name, value in vars(config).items() if name.startswith("TABLE_")]
    assert sorted(names) == sorted(expected)


def test_containers_include_run_artifacts_and_deployment_package(project, main, api):
    names = _created_names(project, "Microsoft.Storage/storageAccounts/blobServices/containers", "containerNames")
    assert config.CONTAINER_RUN_ARTIFACTS in names
    deployment_container = module_param(project, api, "deploymentStorageContainerName")
    assert deployment_container in names, "the deployment package container must be created"
    assert main.resolve(deployment_container) is not None


def test_export_storage_is_parameterised_and_read_only(project, main):
    for name in ("exportStorageAccountName", "exportStorageResourceGroupName", "exportContainerName"):
        assert main.params[name].default == "", f"{name} should default to '' (the app's own account)"
    reader = project.file("app/export-storage-reader.bicep")
    (module,) = project.modules_of(reader)
    scope = module.body.get("scope")
    assert isinstance(scope, Expr) and scope.function == "resourceGroup", "scope the module to the account's group"
    assert "exportStorageResourceGroupName" in text(scope)
    assert text(main.variables["exportsInOwnAccount"]) == "empty(exportStorageAccountName)"
    account = module.params["storageAccountName"]
    assert text(account) == "exportsInOwnAccount ? storage.outputs.name : exportStorageAccountName", (
        f"the reader role goes on the export account, else on the app's own; got {text(account)}"
    )
    target = reader.resource("exportStorageAccount")
    assert target.existing, "the export account is someone else's: reference it, never create it"


# ---------------------------------------------------------------------------------------------
# Key Vault and monitoring
# ---------------------------------------------------------------------------------------------


def test_key_vault_properties(project):
    vault = one(project.resources_of_type("Microsoft.KeyVault/vaults"), "key vault")
    assert vault.get("properties.enableRbacAuthorization") is True, "access by Azure RBAC, not access policies"
    assert vault.get("properties.enableSoftDelete") is True
    assert vault.get("properties.enablePurgeProtection") is True
    assert vault.get("properties.accessPolicies", None) is None


def test_monitoring_is_workspace_based_with_local_auth_off(project):
    workspace = one(project.resources_of_type("Microsoft.OperationalInsights/workspaces"), "Log Analytics workspace")
    insights = one(project.resources_of_type("Microsoft.Insights/components"), "Application Insights")
    assert insights.get("properties.DisableLocalAuth") is True
    assert text(insights.get("properties.WorkspaceResourceId")) == f"{workspace.symbol}.id"


# ---------------------------------------------------------------------------------------------
# Role assignments
# ---------------------------------------------------------------------------------------------


def _assignments(project) -> list[Resource]:
    found = project.resources_of_type("Microsoft.Authorization/roleAssignments")
    assert found, "no role assignments found"
    return found


def _key(assignment: Resource) -> tuple[str, str]:
    return (assignment.file.name.removeprefix("infra/"), assignment.symbol)


def _role_id(assignment: Resource) -> str:
    value = assignment.get("properties.roleDefinitionId")
    assert isinstance(value, Expr) and value.function == "subscriptionResourceId", (
        f"{assignment.where}: roleDefinitionId should be subscriptionResourceId('Microsoft.Authorization/"
        f"roleDefinitions', <id>), got {text(value)}"
    )
    kind, role = value.arguments
    assert kind == "Microsoft.Authorization/roleDefinitions"
    role = assignment.file.resolve(role)
    assert isinstance(role, str), f"{assignment.where}: role id should be a literal or a variable holding one"
    return role


def _scope(assignment: Resource) -> Resource:
    scope = assignment.get("scope")
    assert isinstance(scope, Expr) and scope.is_identifier, f"{assignment.where}: scope should be a resource symbol"
    return assignment.file.resource(scope.text)


def test_role_assignments_target_the_app_identity(project):
    for assignment in _assignments(project):
        principal = assignment.get("properties.principalId")
        if _key(assignment) == DEPLOYER_ASSIGNMENT:
            assert text(principal) == "deployerPrincipalId"
            assert text(assignment.condition) == "!empty(deployerPrincipalId)", "the deployer role must be optional"
            continue
        assert text(principal) == "principalId", f"{assignment.where}: principalId should be the param principalId"
        assert assignment.get("properties.principalType") == "ServicePrincipal", assignment.where
        assert assignment.condition is None, f"{assignment.where}: app identity roles are unconditional"
        identity_output(project, module_param(project, assignment.file, "principalId"), "principalId")


def test_deployer_role_is_off_by_default(project, main):
    rbac = project.file("app/rbac.bicep")
    passed = module_param(project, rbac, "deployerPrincipalId")
    assert text(passed) == "grantPrincipalKeyVaultAccess ? principalId : ''"
    assert main.params["grantPrincipalKeyVaultAccess"].default is False


def test_role_assignment_names_are_guid_of_scope_principal_role(project):
    for assignment in _assignments(project):
        name = assignment.get("name")
        assert isinstance(name, Expr) and name.function == "guid" and len(name.arguments) == 3, (
            f"{assignment.where}: name should be guid(<scope>.id, <principal>, <role>), got {text(name)}"
        )
        scope_arg, principal_arg, role_arg = name.arguments
        assert text(scope_arg) == f"{_scope(assignment).symbol}.id", f"{assignment.where}: {text(name)}"
        assert text(principal_arg) == text(assignment.get("properties.principalId")), f"{assignment.where}"
        role_expr = assignment.get("properties.roleDefinitionId").arguments[1]
        assert text(role_arg) == text(role_expr), f"{assignment.where}: guid role differs from roleDefinitionId"


def test_role_ids_are_expected_for_their_scope(project):
    for assignment in _assignments(project):
        scope = _scope(assignment)
        allowed = ALLOWED_ROLES_BY_SCOPE_TYPE.get(scope.type)
        assert allowed is not None, f"{assignment.where}: unexpected scope type {scope.type}"
        role = _role_id(assignment)
        assert role in allowed, (
            f"{assignment.where}: role {ROLE_NAME.get(role, role)} is not allowed on {scope.type}"
        )


def test_app_identity_has_exactly_the_expected_roles(project):
    granted: dict[tuple[str, str], set[str]] = {}
    for assignment in _assignments(project):
        if _key(assignment) == DEPLOYER_ASSIGNMENT:
            continue
        key = (_key(assignment)[0], _scope(assignment).symbol)
        granted.setdefault(key, set()).add(ROLE_NAME.get(_role_id(assignment), _role_id(assignment)))
    assert granted == APP_IDENTITY_ROLES


def test_role_scopes_are_the_deployed_resources(project):
    """The `existing` resources role assignments are scoped to are the ones main.bicep created."""
    rbac = project.file("app/rbac.bicep")
    wiring = {
        "storageAccountName": ("core/storage.bicep", "name"),
        "keyVaultName": ("core/keyvault.bicep", "name"),
        "applicationInsightsName": ("core/monitoring.bicep", "applicationInsightsName"),
    }
    for param, (module_file, output) in wiring.items():
        (module,) = project.modules_of(project.file(module_file))
        assert text(module_param(project, rbac, param)) == f"{module.symbol}.outputs.{output}"


# ---------------------------------------------------------------------------------------------
# Whole-folder rules, outputs, azd files
# ---------------------------------------------------------------------------------------------


def test_no_shared_keys_anywhere():
    offenders = []
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        content = path.read_text(encoding="utf-8", errors="replace")
        for pattern in ("listKeys(", "AccountKey=", "listkeys("):
            if pattern.lower() in content.lower():
                line = content.lower()[: content.lower().index(pattern.lower())].count("\n") + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {pattern}")
    assert not offenders, "shared keys are off; no key may be read or passed:\n" + "\n".join(offenders)


def test_main_outputs(main):
    expected = {
        "AZURE_FUNCTION_APP_NAME": "api.outputs.name",
        "AZURE_FUNCTION_APP_URL": "api.outputs.url",
        "AZURE_KEY_VAULT_URI": "keyVault.outputs.uri",
        "AZURE_STORAGE_ACCOUNT_NAME": "storage.outputs.name",
    }
    for name, value in expected.items():
        assert name in main.outputs, f"main.bicep should output {name}"
        assert text(main.outputs[name]) == value


def test_main_parameters_have_descriptions(main):
    missing = [name for name, p in main.params.items() if not p.description]
    assert not missing, f"main.bicep params without @description: {missing}"


def test_main_parameters_json_matches_main_bicep(main):
    data = json.loads((INFRA / "main.parameters.json").read_text())
    params = data["parameters"]
    unknown = sorted(set(params) - set(main.params))
    assert not unknown, f"main.parameters.json sets params main.bicep does not declare: {unknown}"
    required = sorted(name for name, p in main.params.items() if not p.has_default)
    assert not set(required) - set(params), f"main.parameters.json misses required params {required}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_azure_yaml_declares_the_function_app_service():
    content = (ROOT / "azure.yaml").read_text()
    lines = [line.split("#", 1)[0].rstrip() for line in content.splitlines()]
    block = "\n".join(lines)
    match = re.search(r"^services:\n  api:\n((?:    .*\n?)+)", block, re.M)
    assert match, "azure.yaml should declare services: api:"
    service = dict(re.findall(r"^    (\w+):\s*(\S+)\s*$", match.group(1), re.M))
    assert service.get("project", "").strip("'\"") == "."
    assert service.get("language") == "python"
    assert service.get("host") == "function"


def test_funcignore_keeps_dev_files_out_of_the_package():
    entries = {
        line.strip() for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip()
        and not line.startswith("#")
    }
    missing = [e for e in FUNCIGNORE_MUST_EXCLUDE if e not in entries]
    assert not missing, f".funcignore should exclude {missing}"
    for keep in FUNCIGNORE_MUST_KEEP:
        assert keep not in entries and keep.rstrip("/") not in entries, f".funcignore must not exclude {keep}"


def test_deploy_doc_explains_every_main_parameter(main):
    doc = (ROOT / "docs" / "deploy.md").read_text()
    missing = [name for name in main.params if f"`{name}`" not in doc]
    assert not missing, f"docs/deploy.md does not explain main.bicep params {missing}"


# ---------------------------------------------------------------------------------------------
# Alerts (infra/app/alerts.bicep)
# ---------------------------------------------------------------------------------------------

EXPORTER = ROOT / "exporter"
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
SCHEDULE_SILENCE_PARAM = "scheduleSilenceMinutes"


def _stuck_reason_sample() -> str:
    from datetime import datetime, timedelta, timezone

    from exporter.domain import Run, RunStatus
    from exporter.lifecycle.stuck import STUCK_AFTER, stuck_reason

    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    run = Run.__new__(Run)  # only the two fields stuck_reason reads
    run.status, run.progress_at = RunStatus.UPLOADING, now - STUCK_AFTER[RunStatus.UPLOADING] - timedelta(minutes=1)
    reason = stuck_reason(run, now)
    assert reason, "a run past STUCK_AFTER must look stuck"
    return reason


def _alert_lines():
    """Per alert rule (symbol in alerts.bicep): the log calls it must catch, as (file under exporter/,
    the format string of the log call, arguments that make the line the rule is about), and lines
    it must not catch. The format strings must appear verbatim in a log call of that file, so a
    reworded log line fails here until the rule's query follows it."""
    from exporter.domain import RunStatus
    from exporter.lifecycle import poison

    failed = RunStatus.FAILED.value
    others = [s.value for s in RunStatus if s is not RunStatus.FAILED]
    tick = "timer: %d started, %d waiting for a refresh to settle, %d up to date, %d errors"
    return {
        "runFailed": (
            [("lifecycle/settle.py", "run ended %s", (failed,)),
             ("lifecycle/plan_status.py", "run ended %s before sending: %s", (failed, "the mapping names no column")),
             ("lifecycle/settle.py", "run failed: %s", ("Omnisend refused the API key",))],
            [("lifecycle/settle.py", "run ended %s", (s,)) for s in others]
            + [("lifecycle/plan_status.py", "run ended %s before sending: %s", (s, "x")) for s in others],
        ),
        "runStuck": (
            [("lifecycle/stuck.py", "run looks stuck: %s", (_stuck_reason_sample(),))],
            [("lifecycle/settle.py", "run ended %s", (failed,))],
        ),
        "poisonMessages": (
            [("lifecycle/poison.py", poison.POISON_WAITING, (q, 3)) for q in poison.POISON_QUEUES],
            [("lifecycle/schedule.py", tick, (0, 0, 0, 0))],
        ),
        "scheduleNotFiring": (
            [("lifecycle/schedule.py", tick, (1, 0, 2, 0))],
            [("blueprints/schedule.py", "timer is past due: a tick was missed; checking every export now", ()),
             ("lifecycle/poison.py", poison.POISON_WAITING, (poison.POISON_QUEUES[0], 1))],
        ),
    }


def _log_formats(relative: str) -> set[str]:
    """Format strings of the logging calls (``<logger>.info("...", ...)``) in exporter/<relative>;
    a module-level string constant passed as the format counts too."""
    import ast

    tree = ast.parse((EXPORTER / relative).read_text())
    constants = {
        target.id: node.value.value
        for node in tree.body if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets if isinstance(target, ast.Name)
    }
    found = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS
                and node.args):
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
            elif isinstance(first, ast.Name) and first.id in constants:
                found.add(constants[first.id])
    return found


KQL_FILTER = re.compile(r'^\| where (message startswith "[^"]+"(?: or message startswith "[^"]+")*)$')


def _prefixes(query: str) -> list[str]:
    """The prefixes of ``traces | where message startswith "a" or message startswith "b" | ...``.
    The query must have exactly this shape (the test evaluates it, so it must understand it)."""
    lines = [line.strip() for line in query.strip().splitlines()]
    assert lines[0] == "traces", f"the query should read the Application Insights traces table:\n{query}"
    match = KQL_FILTER.match(lines[1]) if len(lines) > 1 else None
    assert match, f'the second line should be `| where message startswith "..." [or ...]`:\n{query}'
    assert not any("customDimensions" in line for line in lines), "match the message text, not customDimensions"
    return re.findall(r'startswith "([^"]+)"', match.group(1))


def _matches(prefixes: list[str], message: str) -> bool:
    return any(message.lower().startswith(p.lower()) for p in prefixes)  # KQL startswith: case-insensitive


@pytest.fixture(scope="module")
def alerts(project) -> BicepFile:
    return project.file("app/alerts.bicep")


def _rule(alerts: BicepFile, symbol: str) -> Resource:
    rule = alerts.resource(symbol)
    assert rule.type == "Microsoft.Insights/scheduledQueryRules" and not rule.existing, rule.where
    return rule


def _criterion(rule: Resource) -> dict:
    (criterion,) = rule.get("properties.criteria.allOf")
    return criterion


def test_alert_rules_are_the_four_expected(alerts):
    rules = {r.symbol for r in alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules")}
    assert rules == set(_alert_lines()), f"alert rules in app/alerts.bicep: {sorted(rules)}"


@pytest.mark.parametrize("symbol", sorted(_alert_lines()))
def test_alert_rule_queries_the_lines_the_code_writes(alerts, symbol):
    catch, ignore = _alert_lines()[symbol]
    prefixes = _prefixes(_criterion(_rule(alerts, symbol))["query"])
    for relative, fmt, args in catch + ignore:
        assert fmt in _log_formats(relative), (
            f"exporter/{relative} has no log call with the format {fmt!r}: the alert {symbol} (or this test) "
            "follows a log line the code no longer writes"
        )
    for _, fmt, args in catch:
        assert _matches(prefixes, fmt % args), f"{symbol}'s query {prefixes} misses the line {fmt % args!r}"
    for _, fmt, args in ignore:
        assert not _matches(prefixes, fmt % args), f"{symbol}'s query {prefixes} also catches {fmt % args!r}"
    for prefix in prefixes:
        assert any(_matches([prefix], fmt % args) for _, fmt, args in catch), (
            f"{symbol}: the prefix {prefix!r} matches no line the code writes"
        )


def test_alert_query_check_is_not_vacuous():
    prefixes = _prefixes('traces\n| where message startswith "run ended failed"\n| project message')
    assert _matches(prefixes, "Run ended failed") and not _matches(prefixes, "run ended succeeded")
    assert "run ended %s" in _log_formats("lifecycle/settle.py")
    assert "run ended %s (renamed)" not in _log_formats("lifecycle/settle.py")
    with pytest.raises(AssertionError):
        _prefixes('traces\n| where customDimensions.run_status == "failed"')


def test_alert_rules_read_application_insights_and_notify_the_action_group(project, alerts):
    group = one(alerts.resources_of_type("Microsoft.Insights/actionGroups"), "action group")
    insights = alerts.resource("applicationInsights")
    assert insights.existing and insights.type == "Microsoft.Insights/components"
    assert text(insights.get("name")) == "applicationInsightsName"
    (monitoring_module,) = project.modules_of(project.file("core/monitoring.bicep"))
    assert text(module_param(project, alerts, "applicationInsightsName")) == (
        f"{monitoring_module.symbol}.outputs.applicationInsightsName"
    )
    for symbol in _alert_lines():
        rule = _rule(alerts, symbol)
        assert rule.get("kind") == "LogAlert", rule.where
        assert rule.get("properties.enabled") is True, rule.where
        assert rule.condition is None, f"{rule.where}: alert rules are always deployed"
        assert [text(s) for s in rule.get("properties.scopes")] == [f"{insights.symbol}.id"], rule.where
        assert [text(a) for a in rule.get("properties.actions.actionGroups")] == [f"{group.symbol}.id"], rule.where
        assert rule.get("properties.description"), rule.where
        failing = _criterion(rule)["failingPeriods"]
        assert failing == {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}, rule.where


def test_event_alerts_fire_on_any_matching_line(alerts):
    for symbol in ("runFailed", "runStuck", "poisonMessages"):
        criterion = _criterion(_rule(alerts, symbol))
        assert criterion["timeAggregation"] == "Count", symbol
        assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0), symbol


def _minutes(duration: str) -> int:
    match = re.fullmatch(r"PT(\d+)([MH])", duration)
    assert match, f"expected PT<n>M or PT<n>H, got {duration}"
    return int(match.group(1)) * (60 if match.group(2) == "H" else 1)


def test_repeated_alerts_cover_more_than_one_timer_tick(alerts, main):
    """The stuck and poison lines come once per tick: the window holds two ticks of the default
    schedule, so a stuck run keeps its alert fired (stateful) instead of flapping."""
    period = _schedule_period_minutes(main.params["exportSchedule"].default)
    for symbol in ("runStuck", "poisonMessages"):
        rule = _rule(alerts, symbol)
        assert _minutes(rule.get("properties.windowSize")) >= 2 * period, rule.where
        assert rule.get("properties.autoMitigate") is True, rule.where
    assert _rule(alerts, "runFailed").get("properties.autoMitigate") is False, "each failed run is news"


def _schedule_period_minutes(schedule: str) -> int:
    second, minute, *rest = schedule.split()
    assert second == "0" and rest == ["*", "*", "*", "*"] and minute.startswith("*/"), (
        f"this check understands only '0 */N * * * *', got {schedule!r}"
    )
    return int(minute[2:])


def test_schedule_alert_fires_when_no_tick_arrived_for_longer_than_the_schedule_period(project, main, alerts):
    rule = _rule(alerts, "scheduleNotFiring")
    criterion = _criterion(rule)
    # Zero rows would be "no result", not 0: the query summarizes to one row whatever the window holds.
    assert criterion["query"].strip().splitlines()[-1].strip() == "| summarize ticks = count()"
    assert (criterion["timeAggregation"], criterion.get("metricMeasureColumn")) == ("Total", "ticks")
    assert (criterion["operator"], criterion["threshold"]) == ("LessThan", 1)
    assert rule.get("properties.autoMitigate") is True, "resolves by itself at the next tick"
    window = rule.get("properties.windowSize")
    assert isinstance(window, Interp) and window.template == "PT${" + SCHEDULE_SILENCE_PARAM + "}M"
    assert text(module_param(project, alerts, SCHEDULE_SILENCE_PARAM)) == SCHEDULE_SILENCE_PARAM
    silence = main.params[SCHEDULE_SILENCE_PARAM]
    period = _schedule_period_minutes(main.params["exportSchedule"].default)
    assert period == _schedule_period_minutes(config.DEFAULT_SCHEDULE)
    assert silence.default > 2 * period, "a late tick or two is no outage: the window holds several periods"
    assert all(m > period for m in silence.decorators["allowed"][0]), "every allowed window outlasts a period"
    assert _minutes(rule.get("properties.evaluationFrequency")) <= min(silence.decorators["allowed"][0])


def test_alert_email_is_an_optional_parameter(project, main, alerts):
    assert main.params["alertEmail"].default == "", "no email: the alerts are deployed without a receiver"
    assert text(module_param(project, alerts, "alertEmail")) == "alertEmail"
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    value = params["alertEmail"]["value"]
    assert re.fullmatch(r"\$\{ALERT_EMAIL(=[^}]*)?\}", value), f"map it from the azd variable ALERT_EMAIL: {value}"
    assert value == "${ALERT_EMAIL=}", "empty unless ALERT_EMAIL is set"


def test_action_group_emails_the_alert_email_only_when_given(alerts):
    group = one(alerts.resources_of_type("Microsoft.Insights/actionGroups"), "action group")
    assert group.get("location") == "global"
    assert len(group.get("properties.groupShortName")) <= 12, "Azure limits groupShortName to 12 characters"
    assert group.get("properties.enabled") is True
    receivers = group.get("properties.emailReceivers")
    assert isinstance(receivers, Expr) and receivers.kind == "ternary_expression", text(receivers)
    condition, when_empty, when_given = (alerts.value(c) for c in receivers.node.named_children)
    assert text(condition) == "empty(alertEmail)"
    assert when_empty == []
    (receiver,) = when_given
    assert text(receiver["emailAddress"]) == "alertEmail"
    assert receiver["useCommonAlertSchema"] is True
