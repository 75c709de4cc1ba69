// The function app on a Flex Consumption plan, its app settings and App Service Authentication.
param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

param storageAccountName string
param deploymentStorageContainerName string
param applicationInsightsName string
param keyVaultUri string

@description('Blob endpoint of the storage account holding the platform\'s segment exports.')
param segmentsBlobServiceUri string

param maximumInstanceCount int
param instanceMemoryMB int

param runtimeVersion string = '3.11'

// App settings read by exporter/config.py.
param exportSchedule string
param omnisendApiUrl string
param refreshSettleSeconds int
param secretCacheSeconds int
param omnisendTimeoutSeconds int
param omnisendRateLimit int
param omnisendTagsRateLimit int
param omnisendRateWindowSeconds int
param batchCheckDelaySeconds int
param plannerReaderProcess string

// Sign-in.
param authClientId string
param authOpenIdIssuer string
param authAllowedAudiences array

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: runtimeVersion
      }
    }
  }
}

// Every setting the code reads (exporter/config.py SETTING_NAMES) plus the platform's own.
// Deliberately absent (tests/test_infra.py keeps the list and the reasons):
// AzureWebJobsStorage (a connection string needs shared keys, which are off), EXPORTER_DEV_MODE
// (development only; the app refuses to start with it in Azure), WEBSITE_AUTH_ENABLED (the
// platform sets it when App Service Authentication is on), FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION (not used on Flex Consumption: functionAppConfig.runtime is).
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Functions host storage, identity-based.
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
    // Identity for the Azure SDK clients in the code (DefaultAzureCredential).
    AZURE_CLIENT_ID: identityClientId
    // Telemetry, Entra ID authenticated.
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // The Python worker configures the Azure Monitor OpenTelemetry distro itself and streams the app's
    // spans and logs, so the host (host.json telemetryMode OpenTelemetry) does not send them twice.
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
    // The app's own settings.
    SEGMENTS_BLOB_SERVICE_URI: segmentsBlobServiceUri
    KEY_VAULT_URL: keyVaultUri
    OMNISEND_API_URL: omnisendApiUrl
    EXPORT_SCHEDULE: exportSchedule
    REFRESH_SETTLE_SECONDS: string(refreshSettleSeconds)
    SECRET_CACHE_SECONDS: string(secretCacheSeconds)
    OMNISEND_TIMEOUT_SECONDS: string(omnisendTimeoutSeconds)
    OMNISEND_RATE_LIMIT: string(omnisendRateLimit)
    OMNISEND_TAGS_RATE_LIMIT: string(omnisendTagsRateLimit)
    OMNISEND_RATE_WINDOW_SECONDS: string(omnisendRateWindowSeconds)
    BATCH_CHECK_DELAY_SECONDS: string(batchCheckDelaySeconds)
    PLANNER_READER_PROCESS: plannerReaderProcess
  }
}

// App Service Authentication: every request must carry a valid Entra ID token for the app
// registration, otherwise the platform answers 401 (the API checks again and reads the roles
// Admin / Contributor from the signed-in principal).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: authOpenIdIssuer
        }
        validation: {
          allowedAudiences: authAllowedAudiences
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
