// Omnisend segment exporter: everything `azd up` (or `az deployment group create`) provisions.
// Deployed into one resource group; only the optional export-storage role assignment reaches
// another resource group (the platform's storage account). See docs/deploy.md.
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; feeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. Must be a region that offers Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Object id of the person (or pipeline) deploying. Used only when grantPrincipalKeyVaultAccess is true.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal principalId is: User for a person, ServicePrincipal for a pipeline.')
param principalType string = 'User'

@description('Also give principalId the Key Vault Secrets Officer role on the vault (to inspect or repair connection secrets). Off by default.')
param grantPrincipalKeyVaultAccess bool = false

// ---------------------------------------------------------------------------------------------
// Sign-in (App Service Authentication with Microsoft Entra ID)
// ---------------------------------------------------------------------------------------------

@minLength(1)
@description('Application (client) id of the Entra app registration that protects the API. It must define the app roles Admin and Contributor.')
param authClientId string

@description('Tenant id of that app registration. Empty: the tenant of the deployment.')
param authTenantId string = ''

@description('Audiences accepted in access tokens. Empty: the client id and api://<client id>.')
param authAllowedAudiences array = []

// ---------------------------------------------------------------------------------------------
// Where the platform writes segment exports
// ---------------------------------------------------------------------------------------------

@description('Storage account that holds the platform\'s segment exports (its blob endpoint becomes SEGMENTS_BLOB_SERVICE_URI; the app identity gets Storage Blob Data Reader on it). Empty: the app\'s own storage account.')
param exportStorageAccountName string = ''

@description('Resource group of exportStorageAccountName (same subscription). Empty: this resource group.')
param exportStorageResourceGroupName string = ''

@description('Container the platform writes segment exports to. Created only when the exports live in the app\'s own account; otherwise informational.')
param exportContainerName string = ''

// ---------------------------------------------------------------------------------------------
// App behaviour (app settings read by exporter/config.py)
// ---------------------------------------------------------------------------------------------

@description('EXPORT_SCHEDULE: NCRONTAB schedule (6 fields, UTC) of the export timer.')
param exportSchedule string = '0 */15 * * * *'

@description('OMNISEND_API_URL: base URL of the Omnisend API.')
param omnisendApiUrl string = 'https://api.omnisend.com/api/'

@minValue(0)
@description('REFRESH_SETTLE_SECONDS: how long a segment refresh folder must be unchanged before it is exported.')
param refreshSettleSeconds int = 120

@minValue(0)
@description('SECRET_CACHE_SECONDS: how long an Omnisend API key read from Key Vault is cached in memory.')
param secretCacheSeconds int = 300

@minValue(1)
@description('OMNISEND_TIMEOUT_SECONDS: timeout of one call to the Omnisend API.')
param omnisendTimeoutSeconds int = 30

@minValue(1)
@description('OMNISEND_RATE_LIMIT: requests per window Omnisend allows the brand (400 a minute); all workers share it.')
param omnisendRateLimit int = 400

@minValue(1)
@description('OMNISEND_TAGS_RATE_LIMIT: requests per window to the tags endpoints (60 a minute).')
param omnisendTagsRateLimit int = 60

@minValue(1)
@description('OMNISEND_RATE_WINDOW_SECONDS: the window of both rate limits, in seconds.')
param omnisendRateWindowSeconds int = 60

@minValue(0)
@description('BATCH_CHECK_DELAY_SECONDS: delay before checking on a batch Omnisend accepted.')
param batchCheckDelaySeconds int = 2

@allowed(['auto', 'on', 'off'])
@description('PLANNER_READER_PROCESS: read and map a large segment (16 MB or more) in a second process while planning.')
param plannerReaderProcess string = 'auto'

// ---------------------------------------------------------------------------------------------
// Alerts (app/alerts.bicep; docs/deploy.md says what each means and what to do)
// ---------------------------------------------------------------------------------------------

@description('Email address the alerts notify (run failed, run stuck, poison queue messages, schedule not firing). Empty: the action group has no receiver; the alerts still fire and show in Azure Monitor.')
param alertEmail string = ''

@allowed([
  30
  45
  60
  120
  180
  240
  360
  1440
])
@description('Minutes without a timer tick before the schedule-not-firing alert fires. Keep it longer than the exportSchedule period (default every 15 minutes).')
param scheduleSilenceMinutes int = 45

// ---------------------------------------------------------------------------------------------
// Hosting (Flex Consumption)
// ---------------------------------------------------------------------------------------------

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to. Bounds the parallel load on Omnisend too.')
param maximumInstanceCount int = 100

@allowed([
  2048
  4096
])
@description('Memory of one instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(7)
@maxValue(90)
@description('Days a deleted Key Vault (and its secrets) stays recoverable. Purge protection is on: the vault name stays taken that long.')
param keyVaultSoftDeleteRetentionInDays int = 90

// ---------------------------------------------------------------------------------------------
// Storage resource names the app uses. Keep equal to exporter/config.py
// (QUEUE_*, POISON_SUFFIX, TABLE_*, CONTAINER_RUN_ARTIFACTS); tests/test_infra.py checks it.
// ---------------------------------------------------------------------------------------------

var queueRunsName = 'export-runs'
var queueBatchesName = 'export-batches'
var poisonSuffix = '-poison'
var tableNames = [
  'connections'
  'exports'
  'runs'
  'batches'
  'ratelimits'
]
var runArtifactsContainerName = 'exporter-runs'

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var exportsInOwnAccount = empty(exportStorageAccountName)
var appContainerNames = [
  deploymentStorageContainerName
  runArtifactsContainerName
]
var exportContainerInOwnAccount = exportsInOwnAccount && !empty(exportContainerName) ? [
  exportContainerName
] : []
var effectiveAuthTenantId = empty(authTenantId) ? tenant().tenantId : authTenantId
var effectiveAllowedAudiences = empty(authAllowedAudiences) ? [
  authClientId
  'api://${authClientId}'
] : authAllowedAudiences

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

// The app's only identity: storage, Key Vault, Application Insights and the deployment package.
module appIdentity 'core/identity.bicep' = {
  name: 'appIdentity'
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    containerNames: concat(appContainerNames, exportContainerInOwnAccount)
    queueNames: [
      queueRunsName
      '${queueRunsName}${poisonSuffix}'
      queueBatchesName
      '${queueBatchesName}${poisonSuffix}'
    ]
    tableNames: tableNames
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyVault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  // Roles first, so the host starts with its storage, Key Vault and telemetry access in place.
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: keyVault.outputs.uri
    segmentsBlobServiceUri: exportStorageReader.outputs.blobEndpoint
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    exportSchedule: exportSchedule
    omnisendApiUrl: omnisendApiUrl
    refreshSettleSeconds: refreshSettleSeconds
    secretCacheSeconds: secretCacheSeconds
    omnisendTimeoutSeconds: omnisendTimeoutSeconds
    omnisendRateLimit: omnisendRateLimit
    omnisendTagsRateLimit: omnisendTagsRateLimit
    omnisendRateWindowSeconds: omnisendRateWindowSeconds
    batchCheckDelaySeconds: batchCheckDelaySeconds
    plannerReaderProcess: plannerReaderProcess
    authClientId: authClientId
    authOpenIdIssuer: '${environment().authentication.loginEndpoint}${effectiveAuthTenantId}/v2.0'
    authAllowedAudiences: effectiveAllowedAudiences
  }
}

// Alert rules on the app's log lines in Application Insights, and the action group they notify.
module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    nameSuffix: resourceToken
    alertEmail: alertEmail
    scheduleSilenceMinutes: scheduleSilenceMinutes
  }
}

// Roles of the app identity on the resources of this resource group.
module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    principalId: appIdentity.outputs.principalId
    deployerPrincipalId: grantPrincipalKeyVaultAccess ? principalId : ''
    deployerPrincipalType: principalType
  }
}

// Read access to the platform's segment exports, on whichever account holds them.
module exportStorageReader 'app/export-storage-reader.bicep' = {
  name: 'exportStorageReader'
  scope: resourceGroup(empty(exportStorageResourceGroupName) ? resourceGroup().name : exportStorageResourceGroupName)
  params: {
    storageAccountName: exportsInOwnAccount ? storage.outputs.name : exportStorageAccountName
    principalId: appIdentity.outputs.principalId
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment: `azd env get-values`)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.url
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APP_IDENTITY_CLIENT_ID string = appIdentity.outputs.clientId
output EXPORT_STORAGE_ACCOUNT_NAME string = exportStorageReader.outputs.storageAccountName
output EXPORT_BLOB_ENDPOINT string = exportStorageReader.outputs.blobEndpoint
output EXPORT_CONTAINER_NAME string = exportContainerName
