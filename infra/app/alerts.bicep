// Azure Monitor alerts of the exporter and the action group they notify.
//
// Each rule is a log search alert (scheduled query rule) over the Application Insights resource's
// `traces`: the log records the app writes with Python `logging`, whose `message` is the formatted
// text. The queries match that text only, never customDimensions (whether `extra=` fields become
// custom dimensions depends on the telemetry setup). tests/test_infra.py checks every matched text
// against the log calls in exporter/, so a reworded log line fails CI. docs/deploy.md ("Alerts")
// says what each alert means and what to do.
param applicationInsightsName string
param location string
param tags object = {}

@description('Suffix of the names of the action group and the alert rules.')
param nameSuffix string

@description('Email address the action group notifies. Empty: the action group has no receiver; the alerts still fire and show in Azure Monitor.')
param alertEmail string = ''

@description('Minutes without a timer tick after which the schedule-not-firing alert fires; longer than the schedule period.')
param scheduleSilenceMinutes int = 45

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Always deployed, so every rule is wired to it; without an email it notifies nobody until a
// receiver is added (here, or in the portal: a later deployment replaces receivers added there).
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-exporter-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'exporter'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator-email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// (a) A run ended `failed`: lifecycle/settle.py "run ended failed" (the run's end), lifecycle/
// plan_status.py "run ended failed before sending: <why>" (stopped before its first request), and
// lifecycle/settle.py "run failed: <why>" (failed while batches were still in flight: its end is
// logged later, once they are counted). Stateless: one notification per 5 minutes with failures.
resource runFailed 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-run-failed-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Exporter: an export run failed'
    description: 'A run of an export ended failed (or failed while batches were in flight). The log lines in the results name the reason; GET /api/runs/{id} and the run report say more. See docs/deploy.md, Alerts.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: '''
traces
| where message startswith "run ended failed" or message startswith "run failed: "
| project timestamp, message, operation_Name, operation_Id
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (b) A run is stuck, as GET /api/health says: the timer's reconcile (lifecycle/stuck.py) logs
// "run looks stuck: <reason>" each tick for each active run without progress for longer than
// STUCK_AFTER. Stateful: fires once, resolves when no tick reported a stuck run for 30 minutes.
resource runStuck 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-run-stuck-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Exporter: a run is stuck'
    description: 'The timer found an active run without progress (queued 15 minutes, planning 45, uploading or verifying 30). GET /api/health lists it. See docs/deploy.md, Alerts.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: '''
traces
| where message startswith "run looks stuck: "
| project timestamp, message, operation_Name, operation_Id
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (c) Messages wait in a poison queue (export-runs-poison, export-batches-poison): the timer
// (lifecycle/poison.py) logs "poison queue <name> holds <n> message(s)" each tick it finds any.
// Stateful, like (b).
resource poisonMessages 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-poison-messages-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Exporter: messages wait in a poison queue'
    description: 'A queue message failed on every delivery and its poison queue function has not accounted for it. GET /api/health shows the counts. See docs/deploy.md, Alerts.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: '''
traces
| where message startswith "poison queue "
| project timestamp, message
'''
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// (d) The schedule is not firing: no "timer: <n> started, ..." line (lifecycle/schedule.py, the
// end of every tick) for scheduleSilenceMinutes. `summarize count()` always returns one row, so an
// empty window counts as 0 ticks rather than as no result. Stateful: resolves at the next tick.
resource scheduleNotFiring 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-schedule-not-firing-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Exporter: the schedule is not firing'
    description: 'No timer tick completed in the alert window: scheduled exports are not starting. See docs/deploy.md, Alerts.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT${scheduleSilenceMinutes}M'
    criteria: {
      allOf: [
        {
          query: '''
traces
| where message startswith "timer: "
| summarize ticks = count()
'''
          timeAggregation: 'Total'
          metricMeasureColumn: 'ticks'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

output actionGroupName string = actionGroup.name
output alertRuleNames array = [
  runFailed.name
  runStuck.name
  poisonMessages.name
  scheduleNotFiring.name
]
