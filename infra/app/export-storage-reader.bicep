// Read access for the app identity to the storage account holding the platform's segment
// exports. Deployed into that account's resource group (main.bicep sets the module scope); by
// default this is the app's own account.
param storageAccountName string

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

// Built-in role definition id.
var storageBlobDataReaderRoleId = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

resource exportStorageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource storageBlobDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(exportStorageAccount.id, principalId, storageBlobDataReaderRoleId)
  scope: exportStorageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReaderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output storageAccountName string = exportStorageAccount.name
output blobEndpoint string = exportStorageAccount.properties.primaryEndpoints.blob
